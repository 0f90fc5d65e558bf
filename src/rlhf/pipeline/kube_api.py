"""What every task that drives a Kubernetes custom resource shares (a multi-node stage's
TrainJob, ``trainjob.py``; the deploy stage's InferenceService, ``rollout.py``): the client and
namespace, one API call's timeout, which errors are worth another try, a condition of an
object's status, and waiting for an object to change (a watch, or a sleep where none opens).

The ``kubernetes`` client is used directly (not the Kubeflow or KServe SDKs): it is already in
the image (kfp needs it), and every call maps onto one RBAC verb (docs/kubeflow.md).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TRANSIENT_STATUS = {429, 500, 502, 503, 504}
REQUEST_TIMEOUT = 30.0  # seconds for one API call (not for log and watch streams)
# A Kubernetes quantity: "8", "500m", "64Gi", "1e3".
QUANTITY_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[KMGTPE]i|[mkMGTPE])?$")


def kubernetes_api() -> tuple[Any, str]:
    """A ``kubernetes`` ApiClient and the namespace to work in: the pod's own service account
    and namespace inside a cluster, else the kubeconfig's current context (``KUBECONFIG``)."""
    from kubernetes import client, config

    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
        namespace = (SERVICE_ACCOUNT_DIR / "namespace").read_text(encoding="utf-8").strip()
        return client.ApiClient(), namespace
    # Read KUBECONFIG now: the client reads it once, when it is imported.
    kubeconfig = os.environ.get("KUBECONFIG") or None
    config.load_kube_config(config_file=kubeconfig)
    _, context = config.list_kube_config_contexts(config_file=kubeconfig)
    return client.ApiClient(), (context or {}).get("context", {}).get("namespace") or "default"


def condition(obj: Mapping[str, Any], kind: str, status: str = "True") -> dict[str, Any] | None:
    """The status condition of type ``kind`` when its status is ``status``, else None."""
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind and c.get("status") == status:
            return c
    return None


def transient(e: Exception) -> bool:
    """An error another try may not meet: the API server busy or restarting, a dropped
    connection."""
    import urllib3
    from kubernetes.client.exceptions import ApiException

    if isinstance(e, ApiException):
        return e.status in TRANSIENT_STATUS
    return isinstance(e, (urllib3.exceptions.HTTPError, OSError))


def api_message(e: Any) -> str:
    """The message of the Status an ApiException carries (what ``kubectl`` would print)."""
    try:
        return json.loads(e.body).get("message") or str(e)
    except (TypeError, ValueError):
        return f"{e.status} {e.reason}"


def wait_for_change(
    custom: Any,
    resource: tuple[str, str, str],
    namespace: str,
    name: str,
    seconds: float,
    resource_version: str | None,
) -> None:
    """Block until a watch reports a change of the custom object ``name`` (``resource`` is
    group, version, plural; ``custom`` a ``CustomObjectsApi``) or ``seconds`` pass; a watch
    that cannot be opened (no ``watch`` permission, a proxy that buffers) falls back to
    sleeping, i.e. to polling."""
    from kubernetes import watch

    end = time.monotonic() + seconds
    w = watch.Watch()
    try:
        for _ in w.stream(
            custom.list_namespaced_custom_object,
            resource[0],
            resource[1],
            namespace,
            resource[2],
            field_selector=f"metadata.name={name}",
            resource_version=resource_version,
            timeout_seconds=max(1, math.ceil(seconds)),
            _request_timeout=seconds + REQUEST_TIMEOUT,
        ):
            w.stop()
            return
    except Exception:  # noqa: BLE001 (the caller's next GET says what happened)
        pass
    time.sleep(max(0.0, end - time.monotonic()))


class CustomObject:
    """One namespaced custom object a task drives (a TrainJob, an InferenceService), as its
    manifest names it: reading it, logging each change of its conditions once, and waiting for
    it to change. ``resource`` is (group, version, plural); ``kind`` names it in messages."""

    def __init__(
        self,
        manifest: Mapping[str, Any],
        resource: tuple[str, str, str],
        kind: str,
        api_client: Any,
        log: Callable[[str], None],
        poll_seconds: float,
    ) -> None:
        from kubernetes import client

        self.manifest = manifest
        self.resource = resource
        self.name = manifest["metadata"]["name"]
        self.namespace = manifest["metadata"]["namespace"]
        self.what = f"{kind} {self.namespace}/{self.name}"
        self.custom = client.CustomObjectsApi(api_client)
        self.poll = poll_seconds
        self.log = log
        self._reported: dict[str, tuple[str, str, str]] = {}

    def read(self) -> dict[str, Any] | None:
        """The object as it is now; None when there is none (any other API error is raised)."""
        from kubernetes.client.exceptions import ApiException

        group, version, plural = self.resource
        try:
            return self.custom.get_namespaced_custom_object(
                group, version, self.namespace, plural, self.name,
                _request_timeout=REQUEST_TIMEOUT,
            )  # fmt: skip
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def report(self, obj: Mapping[str, Any]) -> None:
        """Log each condition once per change (Suspended while Kueue waits for quota,
        PredictorReady, Ready, ...)."""
        for c in (obj.get("status") or {}).get("conditions") or []:
            seen = (c.get("status", ""), c.get("reason", ""), c.get("message", ""))
            if self._reported.get(c.get("type", "")) != seen:
                self._reported[c.get("type", "")] = seen
                why = f" {seen[1]}: {seen[2]}" if seen[1] or seen[2] else ""
                self.log(f"{self.what}: {c.get('type')}={seen[0]}{why}")

    def wait_for_change(self, seconds: float, resource_version: str | None) -> None:
        wait_for_change(self.custom, self.resource, self.namespace, self.name, seconds,
                        resource_version)  # fmt: skip
